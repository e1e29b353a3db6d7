"""Network edge of an agent: the wire contract, ZeroMQ transport, CURVE security, link pacing."""
