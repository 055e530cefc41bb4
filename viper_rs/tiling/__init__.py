"""The chip grid shared by the index and region questions: imagery sources (:mod:`.sources`:
:class:`~viper_rs.tiling.sources.Source`, ``scan``) and the chips cut from them
(:mod:`.chips`: one :class:`~viper_rs.tiling.chips.Chip`, core windows and their halo)."""
