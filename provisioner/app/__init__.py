"""The composition root, the CLI and process spawning: the only room that imports the edges."""
