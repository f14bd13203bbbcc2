#include "workspace.h"

#include <cstdlib>
#include <map>
#include <mutex>

namespace rnnkernels {
namespace {

constexpr size_t kMinBytes = size_t(1) << 20;  // smaller buffers come from malloc's own free lists
constexpr size_t kAlignment = 64;

class Pool {
 public:
  Pool() {
    const char* env = std::getenv("RNNKERNELS_CPU_WORKSPACE_MB");
    cap_ = (env != nullptr ? std::strtoull(env, nullptr, 10) : 1024) << 20;
  }
  size_t cap() const { return cap_; }

  // A block of at least n bytes and at most twice that; its size in *got.
  void* take(size_t n, size_t* got) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(n);
      if (it != free_.end() && it->first <= 2 * n) {
        void* p = it->second;
        *got = it->first;
        cached_ -= it->first;
        free_.erase(it);
        return p;
      }
    }
    void* p = nullptr;
    TORCH_CHECK(posix_memalign(&p, kAlignment, n) == 0 && p != nullptr,
                "rnnkernels.lstm: cannot allocate ", n, " bytes");
    *got = n;
    return p;
  }

  void give(void* p, size_t n) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + n <= cap_) {
        free_.emplace(n, p);
        cached_ += n;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0, cap_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may outlive static teardown
  return *p;
}

}  // namespace

at::Tensor workspace_empty(at::IntArrayRef shape, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : shape) numel *= s;
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (!options.device().is_cpu() || bytes < kMinBytes || pool().cap() == 0)
    return at::empty(shape, options);
  size_t got = 0;
  void* p = pool().take(bytes, &got);
  return at::from_blob(p, shape, [got](void* q) { pool().give(q, got); }, options);
}

}  // namespace rnnkernels
