"""The Hosts page: the SSH inventory -- add, import, test and trust hosts."""
