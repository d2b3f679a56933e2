"""The control channel between ccctl and ccmitmd: the typed protocol, the client, the server."""
