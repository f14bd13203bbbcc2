// A flag raised on one thread for as long as a scope object lives there,
// nested scopes putting back what they found: how a call tells code deep
// below it (checks, packing) to run another way, without an argument
// through every layer between.
#pragma once

namespace rnnkernels {

// Tag tells the flags apart: one per kind of scope.
template <typename Tag>
class ThreadScope {
 public:
  ThreadScope() : outer_(raised_) { raised_ = true; }
  ~ThreadScope() { raised_ = outer_; }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
  static bool raised() { return raised_; }

 private:
  static inline thread_local bool raised_ = false;
  bool outer_;
};

}  // namespace rnnkernels
