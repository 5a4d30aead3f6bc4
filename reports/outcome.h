// A result's outcome, shared by the report model (reports/model.h) and the
// sections it includes (reports/pin_convert.h).
#pragma once

#include <string>

namespace gms::report {

enum class Outcome { pass, fail, skip, error };
std::string to_string(Outcome o);

} // namespace gms::report
