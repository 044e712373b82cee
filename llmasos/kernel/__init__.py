"""The kernel: the process table, scheduling policies, context switches, model residency, system calls."""
