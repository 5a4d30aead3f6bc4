#include "core/error.h"

#include <cstring>
#include <fmt/format.h>

namespace gms {

SysError::SysError(std::string call, std::string args, int err)
    : Error(fmt::format("{}({}) failed: {} ({})", call, args, std::strerror(err), err)),
      call_(std::move(call)), err_(err) {}

} // namespace gms
