"""The wire schema shared by the server and every client (imports nothing of the server)."""
