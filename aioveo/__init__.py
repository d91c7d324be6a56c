"""aioveo: an asyncio-native Python client for NEC SX-Aurora VEO."""
__version__ = "0.1.0"
