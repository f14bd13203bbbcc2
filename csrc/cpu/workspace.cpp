#include "workspace.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <pthread.h>

#include <algorithm>
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
// A block starts with its size, then the tensor's data, aligned as malloc's
// for AVX-512: the data pointer is all a deleter gets, and PyTorch's
// copy-on-write clones need it to be the deleter's context too.
constexpr size_t kHeader = 64;

class Pool {
 public:
  Pool() {
    const char* env = std::getenv("RNNKERNELS_CPU_WORKSPACE_MB");
    const long long mb = env != nullptr ? std::strtoll(env, nullptr, 10) : 1024;
    cap_ = static_cast<size_t>(std::max(0LL, mb)) << 20;
    // A child forked while another thread held the lock would wait forever.
    pthread_atfork([] { get().mutex_.lock(); }, [] { get().mutex_.unlock(); },
                   [] { get().mutex_.unlock(); });
  }
  static Pool& get() {
    static Pool* p = new Pool();  // never destroyed: tensors may outlive static teardown
    return *p;
  }
  size_t cap() const { return cap_; }

  // A block of at least n bytes and at most a quarter more (a result the
  // caller keeps holds all of it), the one of its size freed last (the
  // warmest); its size in *got.
  void* take(size_t n, size_t* got) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      auto it = by_size_.lower_bound(n);
      if (it != by_size_.end() && it->first <= n + n / 4) {
        it = std::prev(by_size_.upper_bound(it->first));
        const auto [bytes, p] = *it->second;
        *got = bytes;
        cached_ -= bytes;
        in_use_ += bytes;
        by_age_.erase(it->second);
        by_size_.erase(it);
        return p;
      }
    }
    void* p = nullptr;
    TORCH_CHECK(posix_memalign(&p, kHeader, n) == 0 && p != nullptr,
                "rnnkernels.lstm: cannot allocate ", n, " bytes");
    *got = n;
    const std::lock_guard<std::mutex> lock(mutex_);
    in_use_ += n;
    return p;
  }

  // Keeps the block for a later take; above the cap the blocks freed
  // longest ago go back to malloc (shapes that changed, as with sequences
  // of varying length, leave blocks nothing takes).
  void give(void* p, size_t n) {
    std::vector<void*> evicted;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= n;
      if (n < kMinBytes || n > cap_) {
        evicted.push_back(p);
      } else {
        by_size_.emplace(n, by_age_.insert(by_age_.end(), {n, p}));
        cached_ += n;
      }
      while (cached_ > cap_) {
        const auto [bytes, q] = by_age_.front();
        auto first = by_size_.lower_bound(bytes);  // equal sizes stay in the order given
        while (first->second != by_age_.begin()) ++first;
        by_size_.erase(first);
        by_age_.pop_front();
        cached_ -= bytes;
        ++evictions_;
        evicted.push_back(q);
      }
    }
    for (void* q : evicted) std::free(q);
  }

  WorkspaceStats stats() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(in_use_), static_cast<int64_t>(cached_), evictions_};
  }

 private:
  using Blocks = std::list<std::pair<size_t, void*>>;
  std::mutex mutex_;
  Blocks by_age_;  // (bytes, block), freed longest ago first
  std::multimap<size_t, Blocks::iterator> by_size_;
  size_t cached_ = 0, in_use_ = 0, cap_ = 0;
  int64_t evictions_ = 0;
};

// PyTorch's allocator interface over the pool, so that its tensors are
// ordinary ones (resizable; share_memory_ moves them out) that the op can
// return: a gradient freed by zero_grad comes back here, not to the
// kernel, and the next step's gradient is not new pages.
class PoolAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    TORCH_CHECK(n <= SIZE_MAX - kHeader, "rnnkernels.lstm: cannot allocate ", n, " bytes");
    size_t got = 0;
    char* const block = static_cast<char*>(Pool::get().take(n + kHeader, &got));
    *reinterpret_cast<size_t*>(block) = got;
    void* const data = block + kHeader;
    report(data, static_cast<int64_t>(got));
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  static void release(void* data) {
    char* const block = static_cast<char*>(data) - kHeader;
    const size_t bytes = *reinterpret_cast<size_t*>(block);
    report(data, -static_cast<int64_t>(bytes));
    Pool::get().give(block, bytes);
  }
  // torch.profiler's memory events (bench's peak column) count the pool's
  // tensors as they count the CPU allocator's.
  static void report(void* data, int64_t bytes) {
    if (!c10::memoryProfilingEnabled()) return;
    const WorkspaceStats s = Pool::get().stats();
    c10::reportMemoryUsageToProfiler(data, bytes, s.in_use, s.in_use + s.cached,
                                     c10::Device(c10::DeviceType::CPU));
  }
};

}  // namespace

at::Tensor workspace_empty(at::IntArrayRef shape, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : shape) numel *= s;
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (!options.device().is_cpu() || bytes < kMinBytes || Pool::get().cap() == 0)
    return at::empty(shape, options);
  static PoolAllocator* allocator = new PoolAllocator();  // never destroyed, as the pool
  return at::detail::empty_generic(shape, allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), std::nullopt);
}

WorkspaceStats workspace_stats() { return Pool::get().stats(); }

}  // namespace rnnkernels
