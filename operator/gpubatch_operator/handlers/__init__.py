"""What the kopf registrations in main.py delegate to: keep the store current, enqueue reconciles."""
