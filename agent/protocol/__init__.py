"""The wire contract: message kinds, their fields, the protocol version and the frame codec.

Imported by both planes (node loop, transport) and by the policies, which build and read
control messages; it imports no sockets.
"""
