"""smdebug's framework-independent names that scripts import: modes, collections, save and reduction configs."""
