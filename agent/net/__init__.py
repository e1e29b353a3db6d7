"""Network edge of an agent: ZeroMQ transport, CURVE security, link pacing (the wire contract is ``agent.protocol``)."""
