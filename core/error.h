// Typed errors. Thrown anywhere, caught only in main (and in the per-check
// boundary of the conformance runner, where a throw is a finding).
#pragma once

#include <stdexcept>
#include <string>

namespace gms {

class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// A system call failed: carries the call, its arguments and errno.
class SysError : public Error {
  public:
    SysError(std::string call, std::string args, int err);
    const std::string& call() const { return call_; }
    int err() const { return err_; }

  private:
    std::string call_;
    int err_;
};

// Bad command line or profile: exit code 2.
class UsageError : public Error {
  public:
    using Error::Error;
};

// The machine cannot run what was asked (no /dev/kvm, not enough memory): exit 3.
class EnvError : public Error {
  public:
    using Error::Error;
};

// Raised when a stop was requested (SIGINT/SIGTERM, deadline) in code that
// cannot return early any other way.
class Interrupted : public Error {
  public:
    Interrupted() : Error("interrupted") {}
};

} // namespace gms
