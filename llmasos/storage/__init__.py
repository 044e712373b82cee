"""State that must survive a restart, in SQLite under $LLMASOS_HOME."""
