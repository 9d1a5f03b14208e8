"""`python -m provisioner`: the same CLI as the `provisioner` console script."""

from provisioner.app.cli import main

main()
