"""Pure data and protocol: references, manifests, digests, the registry client.

Nothing here knows about namespaces, the store layout or click.
"""
