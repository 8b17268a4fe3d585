"""Every model's variables without computing anything, and its parameter count, one way for all of them.

Full-size models (HiT-B at 1024, GAT-XL, the SD-VAE) must build and count their parameters on a laptop CPU:
build_symbolic() traces one call on Keras symbolic tensors (shapes only, no arithmetic), or, for models whose
variables follow from their configuration alone (GAT's), calls build().
"""

import keras
import numpy as np


def count_parameters(variables):
    """Elements of `variables` (from their shapes: works for variables whose values are not drawn yet)."""
    return int(sum(np.prod(v.shape, dtype=np.int64) for v in variables))


class SymbolicBuild:
    """Mixin of the package's Keras models. A model says what one call takes (symbolic_input_shapes), or None when
    build() alone creates every variable; parts names the sub-layers parameter_counts() reports one by one."""

    parts = {}  # {name in parameter_counts(): attribute holding the sub-layer}; {}: the whole model as "total"

    def symbolic_input_shapes(self, batch_size):
        """The shapes of one call's inputs, or None: build() needs none."""
        raise NotImplementedError

    def build_symbolic(self, batch_size=1):
        """Create every variable (no computation). Returns the model."""
        if not self.built:
            shapes = self.symbolic_input_shapes(batch_size)
            if shapes is None:
                self.build()
            else:
                self(*[keras.KerasTensor(shape) for shape in shapes])
        return self

    def parameter_counts(self):
        """{part: trainable parameters} for each of `parts`, or {"total": all of them}."""
        self.build_symbolic()
        if not self.parts:
            return {"total": count_parameters(self.trainable_variables)}
        return {name: count_parameters(getattr(self, attribute).trainable_variables)
                for name, attribute in self.parts.items()}
