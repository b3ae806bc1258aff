"""ACDC and HVSMR readers, synthetic volumes, preprocessing cache and client splits."""
