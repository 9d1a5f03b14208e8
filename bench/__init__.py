"""Benchmarks of the provisioner against a real `provisioner serve`; run each as `python -m`."""
