"""What the repository ships besides code: README and docs links, the systemd units."""
