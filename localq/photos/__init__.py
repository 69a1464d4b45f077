"""A trained classifier where photos live: XMP sidecar keywords and image folders."""
