"""Uploaders: each `[[sink]]` reads durable readings from its cursor and ships them."""
