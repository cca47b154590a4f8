"""The control socket: its protocol (typed requests and replies), the server and the client.

Imports: the foundation and anycastd.core."""
