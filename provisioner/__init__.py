"""The provisioner core: workspaces, operations, nodes, plans, images, approvals and TTL."""
