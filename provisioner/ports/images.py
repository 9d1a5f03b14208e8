"""The image and catalog-sync seam of the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from provisioner.models import Image, Node, Plan


class ImageRows(Protocol):
    """Imported images, and the configured catalog (nodes, plans, images) synced in."""

    async def save_image(self, image: Image) -> None:
        """Store an image registered by an import."""
        ...

    async def get_image(self, name: str) -> Image | None:
        """The stored image called `name`."""
        ...

    async def list_images(self) -> list[Image]:
        """Every stored image, configured or imported."""
        ...

    async def sync_catalog(
        self, node_list: Sequence[Node], plan_list: Sequence[Plan], image_list: Sequence[Image]
    ) -> None:
        """Make the stored nodes, plans and images match the configuration."""
        ...
