#include "scan_program.h"

#include <c10/util/Exception.h>

namespace rnnfast::scan {
namespace {

class Reader {
 public:
  explicit Reader(const std::vector<int64_t>& codes) : codes_(codes) {}
  int64_t next() {
    TORCH_CHECK(pos_ < codes_.size(), "scan program: codes end early at ", pos_);
    return codes_[pos_++];
  }
  std::vector<int64_t> list(int64_t n) {
    TORCH_CHECK(n >= 0, "scan program: negative count ", n);
    std::vector<int64_t> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(next());
    return out;
  }
  bool done() const { return pos_ == codes_.size(); }

 private:
  const std::vector<int64_t>& codes_;
  size_t pos_ = 0;
};

void check_slots(const std::vector<int64_t>& ids, int64_t n_slots, int64_t n_scalars,
                 bool immediates) {
  for (int64_t id : ids) {
    if (id == kNoOperand) continue;
    if (id < 0) {
      TORCH_CHECK(immediates && -id - 1 < n_scalars, "scan program: bad immediate ", id);
    } else {
      TORCH_CHECK(id < n_slots, "scan program: slot ", id, " out of ", n_slots);
    }
  }
}

// Program::boundary_in_place.
std::vector<bool> boundary_in_place(const Program& p) {
  std::vector<int> writers(p.cols.size(), 0);
  for (const Node& node : p.nodes) {
    if (node.op == Op::kMmAccumulate) continue;  // adds to what another node wrote
    for (int64_t o : node.outs) writers[o] += node.op == Op::kSplit ? 2 : 1;  // a view: never
  }
  std::vector<bool> out(p.boundary.size(), false), named(p.cols.size(), false);
  for (size_t j = 0; j < p.boundary.size(); ++j) {
    const int64_t id = p.boundary[j];
    out[j] = writers[id] == 1 && !named[id] && p.cols[id] > 0;
    named[id] = true;
  }
  return out;
}

}  // namespace

Program decode_program(const std::vector<int64_t>& codes, std::vector<double> scalars) {
  Reader r(codes);
  TORCH_CHECK(r.next() == 1, "scan program: unknown version");
  Program p;
  p.scalars = std::move(scalars);
  p.dtype = static_cast<int>(r.next());
  TORCH_CHECK(p.dtype == 0 || p.dtype == 1, "scan program: dtype code must be 0 or 1");
  const int64_t n_slots = r.next();
  const int64_t n_carry = r.next(), n_seq = r.next(), n_weight = r.next();
  const int64_t n_carry_out = r.next(), n_boundary = r.next(), n_nodes = r.next();
  const int64_t n_accumulators = r.next();
  TORCH_CHECK(n_carry == n_carry_out, "scan program: carry in and out counts differ");
  p.cols = r.list(n_slots);
  p.carry_in = r.list(n_carry);
  p.seq_in = r.list(n_seq);
  p.weights = r.list(n_weight);
  p.carry_out = r.list(n_carry_out);
  p.boundary = r.list(n_boundary);
  for (const auto* ids : {&p.carry_in, &p.seq_in, &p.weights, &p.carry_out, &p.boundary}) {
    check_slots(*ids, n_slots, 0, false);
  }
  for (int64_t k = 0; k < n_accumulators; ++k) {
    const int64_t rows = r.next(), cols = r.next();
    TORCH_CHECK(rows >= 0 && cols >= 0, "scan program: bad accumulator shape");
    p.accumulators.push_back(rows == 0 ? std::vector<int64_t>{cols}
                                       : std::vector<int64_t>{rows, cols});
  }
  for (int64_t k = 0; k < n_nodes; ++k) {
    Node node;
    node.op = static_cast<Op>(r.next());
    node.outs = r.list(r.next());
    node.ins = r.list(r.next());
    node.ints = r.list(r.next());
    check_slots(node.outs, n_slots, 0, false);
    check_slots(node.ins, n_slots, static_cast<int64_t>(p.scalars.size()), true);
    p.nodes.push_back(std::move(node));
  }
  TORCH_CHECK(r.done(), "scan program: codes continue past the last node");
  p.boundary_in_place = boundary_in_place(p);
  return p;
}

}  // namespace rnnfast::scan
