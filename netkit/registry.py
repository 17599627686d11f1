"""Name -> class registries, with errors that list what is known."""
import difflib

from .errors import NetkitError


class UnknownTypeError(NetkitError, KeyError):
    def __str__(self):
        return self.args[0]


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._classes = {}

    def register(self, *names):
        """Decorator registering a class under one or more type names."""
        def deco(cls):
            for name in names:
                if name in self._classes and self._classes[name] is not cls:
                    raise ValueError("%s type %r registered twice" % (self.kind, name))
                self._classes[name] = cls
            cls.type_names = getattr(cls, "type_names", ()) + tuple(names)
            return cls
        return deco

    def get(self, name):
        try:
            return self._classes[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._classes, n=1)
            hint = "did you mean %r? " % close[0] if close else ""
            raise UnknownTypeError("unknown %s type %r (%sknown types: %s)"
                                   % (self.kind, name, hint, ", ".join(sorted(self._classes)))) from None

    def __contains__(self, name):
        return name in self._classes

    def names(self):
        return sorted(self._classes)


layers = Registry("layer")
solvers = Registry("solver")
