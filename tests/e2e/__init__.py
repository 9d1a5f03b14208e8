"""The e2e tier: a real libvirtd with QEMU guests, run by scripts/e2e/run.sh in a private namespace."""
