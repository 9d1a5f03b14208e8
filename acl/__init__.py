"""Access control: role-based permissions for both edges, and (later) the Tailscale policy file."""
