"""Image data: the built-in procedural anime faces and user image folders."""
