"""Group cryptography (issue 13): signed, hash-chained membership and sender-key encryption.

Pure (stdlib + ``cryptography``), like ``securechat/e2e.py``; the byte layouts are fixed by
``docs/CONTRACTS.md`` ("Groups") and mirrored by ``static/js/groups/``.
"""
