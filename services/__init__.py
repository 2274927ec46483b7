"""The modm services, one folder each; installed as `modm.services`."""
