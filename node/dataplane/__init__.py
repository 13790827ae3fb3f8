"""The data plane: encrypted study objects on disk, and the HTTPS server and client that move them.

- :mod:`.blobstore`: content-addressed encrypted objects and manifests on disk;
- :mod:`.server`: the HTTPS server that serves objects to holders of a capability;
- :mod:`.client`: resumable fetching of a transfer's objects from a peer;
- :mod:`.tls`: self-signed certificates bound to the members' keys.

A leaf: imports only the node's foundation (errors, config, clock).
"""
