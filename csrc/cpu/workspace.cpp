#include "workspace.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>

#include <atomic>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <vector>

namespace rnnkernels {
namespace {

// Smaller buffers come from malloc's free lists: glibc serves them from its
// heap, but trims freed memory at the top of the heap above 128 KiB back to
// the kernel, so buffers from there up were new pages on most calls.
constexpr size_t kMinBytes = size_t(128) << 10;
constexpr size_t kAlignment = 64;

class Pool {
 public:
  Pool() {
    const char* env = std::getenv("RNNKERNELS_CPU_WORKSPACE_MB");
    cap_ = (env != nullptr ? std::strtoull(env, nullptr, 10) : 1024) << 20;
  }
  size_t cap() const { return cap_; }

  // A block of at least n bytes and at most a quarter more (a result the
  // caller keeps holds all of it); its size in *got.
  void* take(size_t n, size_t* got) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      auto it = by_size_.lower_bound(n);
      if (it != by_size_.end() && it->first <= n + n / 4) {
        const auto [bytes, p] = *it->second;
        *got = bytes;
        cached_ -= bytes;
        by_age_.erase(it->second);
        by_size_.erase(it);
        return p;
      }
    }
    void* p = nullptr;
    TORCH_CHECK(posix_memalign(&p, kAlignment, std::max<size_t>(n, 1)) == 0 && p != nullptr,
                "rnnkernels.lstm: cannot allocate ", n, " bytes");
    *got = n;
    return p;
  }

  // Keeps the block for a later take; above the cap the blocks freed
  // longest ago go back to malloc (shapes that changed, as with sequences
  // of varying length, leave blocks nothing takes).
  void give(void* p, size_t n) {
    if (n < kMinBytes || n > cap_) return std::free(p);
    std::vector<void*> evicted;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      by_size_.emplace(n, by_age_.insert(by_age_.end(), {n, p}));
      cached_ += n;
      while (cached_ > cap_) {
        const auto [bytes, q] = by_age_.front();
        auto [first, last] = by_size_.equal_range(bytes);
        while (first->second != by_age_.begin()) ++first;
        by_size_.erase(first);
        by_age_.pop_front();
        cached_ -= bytes;
        evicted.push_back(q);
      }
    }
    for (void* q : evicted) std::free(q);
  }

 private:
  using Blocks = std::list<std::pair<size_t, void*>>;
  std::mutex mutex_;
  Blocks by_age_;  // (bytes, block), freed longest ago first
  std::multimap<size_t, Blocks::iterator> by_size_;
  size_t cached_ = 0, cap_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may outlive static teardown
  return *p;
}

// A block handed out, and its size, for the deleter to give back.
struct Block {
  void* data;
  size_t bytes;
};

// PyTorch's allocator interface over the pool, so that its tensors are
// ordinary ones (resizable; share_memory_ moves them out) that the op can
// return: a gradient freed by zero_grad comes back here, not to the
// kernel, and the next step's gradient is not new pages.
class PoolAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    auto* block = new Block{nullptr, 0};
    block->data = pool().take(n, &block->bytes);
    report(block->data, static_cast<int64_t>(block->bytes));
    return {block->data, block, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  static void release(void* ctx) {
    const Block* block = static_cast<Block*>(ctx);
    report(block->data, -static_cast<int64_t>(block->bytes));
    pool().give(block->data, block->bytes);
    delete block;
  }
  // torch.profiler's memory events (bench's peak column) count the pool's
  // tensors as they count the CPU allocator's.
  static void report(void* data, int64_t bytes) {
    static std::atomic<int64_t> in_use{0};
    const int64_t now = in_use += bytes;
    c10::reportMemoryUsageToProfiler(data, bytes, now, now, c10::Device(c10::DeviceType::CPU));
  }
};

}  // namespace

at::Tensor workspace_empty(at::IntArrayRef shape, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : shape) numel *= s;
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (!options.device().is_cpu() || bytes < kMinBytes || pool().cap() == 0)
    return at::empty(shape, options);
  static PoolAllocator* allocator = new PoolAllocator();  // never destroyed, as the pool
  return at::detail::empty_generic(shape, allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), std::nullopt);
}

}  // namespace rnnkernels
