"""Pure domain logic over frozen snapshots: states, swap policy, events. No trio, no I/O."""
