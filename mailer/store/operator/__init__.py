"""The tables of operator actions: `paused_campaigns` (pauses) and `operator_audit` (audit)."""
