"""What customers and staff see: the consent banner, the preference center, the admin console."""
