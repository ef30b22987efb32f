"""``zlh demo``: the README's ``make run`` after bootstrap.

Builds what the platform needs (node and code-server artifacts, the LXC template; each a no-op
when already built), makes sure the admin account exists, runs ``zlh up`` as a child process,
reuses or requests the demo container, follows its progress over SSE, waits until its IDE
answers through the public front and prints the URLs and the credentials. Ctrl-C stops
``zlh up``; the demo container keeps running and is reused by the next run.
"""
