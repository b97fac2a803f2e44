"""``pbox build``: Dockerfile parsing, .dockerignore matching and the build executor."""
