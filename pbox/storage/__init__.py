"""The on-disk store: blobs, extracted layers, images, tags, containers, volumes."""
