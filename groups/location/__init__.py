"""Group location: fixes, history, places (geofences), privacy, SOS."""
