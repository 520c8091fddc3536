// Lets Python import the extension as rnnfast._C; importing it runs the op registrations.
// Only the pip build compiles this file: the CMake library for libtorch users has no Python.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}
