"""The tailnet for advanced users: the Headscale client (``headscale``), per-container users,
pre-auth keys sealed at rest (``service``), the ACL policy (``policy``) and ``zlh tailnet``'s
arguments (``cli``)."""
