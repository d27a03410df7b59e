"""The "Deploy to hosts…" dialog: one model version to many SSH hosts."""
