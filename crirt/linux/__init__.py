"""What crirt reads from and asks of the Linux kernel directly (procfs, for now)."""
