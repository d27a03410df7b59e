"""The SSH target: on-prem Linux hosts reached with paramiko."""
