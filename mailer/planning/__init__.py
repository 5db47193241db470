"""Who gets which mail, when: triggers, wake-ups, the policy, the planner."""
