"""The serving guard: a reverse proxy in front of one model server (``devmlops guard``)."""
