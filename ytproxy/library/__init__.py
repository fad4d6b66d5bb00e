"""The tracks people keep: the SQLite store, the tracks service the handler
asks for a fresh stream URL, and playlists."""
