"""At the bottom of core: what every floor needs — tasks, errors, the registry, training parameters,
prediction shapes, process checks. Imports nothing else of core."""
