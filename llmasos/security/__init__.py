"""Apps (identities with priorities, quotas and capabilities), access checks, audit."""
