"""What a node of a cluster shares with the others through Redis: the link, the shared limits."""
