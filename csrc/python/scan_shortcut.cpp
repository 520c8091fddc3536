#include "scan_shortcut.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <cstring>
#include <string>

namespace rnnfast {
namespace {

namespace py = pybind11;

// Appends what rnnfast.scan's trace depends on in each tensor of `tensors` (a list): dtype,
// device, requires_grad and the sizes after the first `skip`. False where one is not a plain
// dense tensor with concrete sizes (the caller then describes them in Python).
bool describe_tensors(py::handle tensors, int64_t skip, std::string& key) {
  PyObject* list = tensors.ptr();
  if (!PyList_Check(list)) return false;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); ++i) {
    PyObject* obj = PyList_GET_ITEM(list, i);
    if (!THPVariable_Check(obj)) return false;
    const at::Tensor& t = THPVariable_Unpack(obj);
    if (t.layout() != at::kStrided || t.is_nested() ||
        t.unsafeGetTensorImpl()->is_python_dispatch() ||
        t.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) {
      return false;
    }
    const int64_t fields[] = {static_cast<int64_t>(t.scalar_type()),
                              static_cast<int64_t>(t.device().type()), t.device().index(),
                              t.requires_grad(), t.dim() - skip};
    key.append(reinterpret_cast<const char*>(fields), sizeof(fields));
    for (int64_t d = skip; d < t.dim(); ++d) {
      const int64_t size = t.size(d);
      key.append(reinterpret_cast<const char*>(&size), sizeof(size));
    }
  }
  return true;
}

// What a closure cell or global holds (rnnfast/_scan/shortcut.py's kinds, same numbers).
enum Kind : int64_t { kTensor = 0, kScalar = 1, kTensors = 2, kSame = 3 };

// A tensor that is exactly torch.Tensor or nn.Parameter (no subclass).
bool plain_tensor(PyObject* obj) { return THPVariable_CheckExact(obj); }

// Appends the tensors of a flat tuple or list `value` of `type` and `length` to `out`; false
// where it is not one.
bool append_flat(PyObject* value, PyObject* type, Py_ssize_t length, py::list& out) {
  if (reinterpret_cast<PyObject*>(Py_TYPE(value)) != type) return false;
  PyObject* seq = value;
  const bool is_list = PyList_CheckExact(seq);
  if (!is_list && !PyTuple_CheckExact(seq)) return false;
  const Py_ssize_t n = is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq);
  if (n != length) return false;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* t = is_list ? PyList_GET_ITEM(seq, i) : PyTuple_GET_ITEM(seq, i);
    if (!plain_tensor(t)) return false;
    out.append(py::handle(t));
  }
  return true;
}

// Whether `value` matches (kind, expected), its tensors appended to `lifted`.
bool match_value(PyObject* value, py::handle kind_expected, py::list& lifted) {
  PyObject* pair = kind_expected.ptr();
  const int64_t kind = PyLong_AsLongLong(PyTuple_GET_ITEM(pair, 0));
  PyObject* expected = PyTuple_GET_ITEM(pair, 1);
  switch (kind) {
    case kTensor:
      if (!plain_tensor(value)) return false;
      lifted.append(py::handle(value));
      return true;
    case kScalar: {
      if (Py_TYPE(value) != Py_TYPE(expected)) return false;
      const int equal = PyObject_RichCompareBool(value, expected, Py_EQ);
      if (equal < 0) throw py::error_already_set();
      return equal == 1;
    }
    case kTensors:
      return append_flat(value, PyTuple_GET_ITEM(expected, 0),
                         PyLong_AsSsize_t(PyTuple_GET_ITEM(expected, 1)), lifted);
    case kSame:
      return value == expected;
    default:
      return false;
  }
}

// A tree of `kind` (shortcut.py's _tree_kind: None for a lone tensor, (type, length) for a
// flat tuple or list) as a list of its tensors; false where it is not of that kind.
bool tree_leaves(py::handle tree, py::handle kind, py::list& out) {
  if (kind.is_none()) {
    if (!plain_tensor(tree.ptr())) return false;
    out.append(tree);
    return true;
  }
  return append_flat(tree.ptr(), PyTuple_GET_ITEM(kind.ptr(), 0),
                     PyLong_AsSsize_t(PyTuple_GET_ITEM(kind.ptr(), 1)), out);
}

// shortcut.py's Shortcut.inputs past the module: see the binding's doc.
py::object shortcut_inputs(py::tuple spec, py::handle fn, py::handle init, py::handle xs,
                           py::list module_tensors) {
  PyObject* f = fn.ptr();
  if (!PyFunction_Check(f)) return py::none();
  PyObject* defaults = PyFunction_GET_DEFAULTS(f);
  PyObject* kwdefaults = PyFunction_GET_KW_DEFAULTS(f);
  if ((defaults != nullptr && defaults != Py_None) ||
      (kwdefaults != nullptr && kwdefaults != Py_None)) {
    return py::none();
  }
  const py::tuple cells = spec[0], names = spec[1], globals = spec[2];
  PyObject* closure = PyFunction_GET_CLOSURE(f);
  const Py_ssize_t n_cells =
      closure == nullptr || closure == Py_None ? 0 : PyTuple_GET_SIZE(closure);
  if (n_cells != static_cast<Py_ssize_t>(cells.size())) return py::none();
  py::list lifted;
  for (Py_ssize_t i = 0; i < n_cells; ++i) {
    PyObject* value = PyCell_GET(PyTuple_GET_ITEM(closure, i));
    if (value == nullptr || !match_value(value, cells[i], lifted)) return py::none();
  }
  PyObject* g = PyFunction_GET_GLOBALS(f);
  const py::handle missing = spec[6];
  for (size_t i = 0; i < names.size(); ++i) {
    PyObject* value = PyDict_GetItemWithError(g, names[i].ptr());  // borrowed
    if (value == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      value = missing.ptr();
    }
    if (!match_value(value, globals[i], lifted)) return py::none();
  }
  for (py::handle t : module_tensors) lifted.append(t);
  py::list init_leaves, x_leaves;
  if (!tree_leaves(init, spec[3], init_leaves) || !tree_leaves(xs, spec[4], x_leaves)) {
    return py::none();
  }
  // The key fixes every rank and size but init's batch and xs' steps and batch.
  std::string key;
  if (!describe_tensors(lifted, 0, key) || !describe_tensors(init_leaves, 1, key) ||
      !describe_tensors(x_leaves, 2, key)) {
    return py::none();
  }
  PyObject* expected = spec[5].ptr();
  if (!PyBytes_Check(expected) ||
      PyBytes_GET_SIZE(expected) != static_cast<Py_ssize_t>(key.size()) ||
      std::memcmp(PyBytes_AS_STRING(expected), key.data(), key.size()) != 0) {
    return py::none();
  }
  const at::Tensor& first = THPVariable_Unpack(x_leaves[0].ptr());
  const int64_t T = first.size(0), B = first.size(1);
  if (T == 0) return py::none();
  for (py::handle x : x_leaves) {
    const at::Tensor& t = THPVariable_Unpack(x.ptr());
    if (t.size(0) != T || t.size(1) != B) return py::none();
  }
  for (py::handle h : init_leaves) {
    if (THPVariable_Unpack(h.ptr()).size(0) != B) return py::none();
  }
  return py::make_tuple(lifted, init_leaves, x_leaves);
}

}  // namespace

void bind_scan_shortcut(py::module_& m) {
  using namespace pybind11::literals;
  m.def(
      "scan_tensors_key",
      [](py::handle lifted, py::handle init, py::handle xs) -> py::object {
        std::string key;
        if (!describe_tensors(lifted, 0, key) || !describe_tensors(init, 1, key) ||
            !describe_tensors(xs, 2, key)) {
          return py::none();
        }
        return py::bytes(key);
      },
      "lifted"_a, "init"_a, "xs"_a,
      "what rnnfast.scan's trace depends on in its tensors (lists; init's batch and xs' steps "
      "and batch left out), as bytes for its cache key; None where one is not a plain dense "
      "tensor with concrete sizes");
  m.def("scan_shortcut_inputs", &shortcut_inputs, "spec"_a, "fn"_a, "init"_a, "xs"_a,
        "module_tensors"_a,
        "rnnfast/_scan/shortcut.py's match of a call: fn a plain function without defaults "
        "whose closure cells and named globals match spec's kinds (spec: (cells, names, "
        "globals, init kind, xs kind, tensors key, the missing-global sentinel)), init and xs "
        "of their kinds, and the tensors' key (the lifted ones, then module_tensors) the same; "
        "then (lifted, init leaves, xs leaves), else None");
}

}  // namespace rnnfast
