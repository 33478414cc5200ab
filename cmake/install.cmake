# Installed packages: libpagoda.so (SONAME libpagoda.so.<major>) and libpagoda.a, both made of the
# objects the module libraries (pagoda_core ... pagoda_serve, pagoda_cuda) already compiled, so the
# library is compiled once; the public header; a pkg-config file; a CMake package with the targets
# pagoda::pagoda (shared) and pagoda::pagoda_static; the `pagoda` CLI.
# Included from CMakeLists.txt after the module libraries (PAGODA_LIBS) are defined.
set(pagoda_objs)
foreach(lib ${PAGODA_LIBS})
  list(APPEND pagoda_objs $<TARGET_OBJECTS:${lib}>)
endforeach()
if(PAGODA_WITH_CUDA)
  list(APPEND pagoda_objs $<TARGET_OBJECTS:pagoda_cuda>)
endif()

# what the library objects need at link time
set(pagoda_deps OpenMP::OpenMP_C PkgConfig::JANSSON PkgConfig::PCRE2 PkgConfig::MHD PkgConfig::YAML
    Threads::Threads m)
if(PAGODA_WITH_CUDA)
  list(APPEND pagoda_deps CUDA::cudart CUDA::cublas stdc++)
endif()
if(PAGODA_WITH_MPI) # tensor parallelism across processes (src/backend/mpi_group.c)
  list(APPEND pagoda_deps MPI::MPI_C)
endif()

add_library(pagoda_shared SHARED ${pagoda_objs})
set_target_properties(pagoda_shared PROPERTIES OUTPUT_NAME pagoda EXPORT_NAME pagoda
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR} LINKER_LANGUAGE C
  LINK_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/cmake/pagoda.map)
target_link_options(pagoda_shared PRIVATE "LINKER:--version-script=${CMAKE_CURRENT_SOURCE_DIR}/cmake/pagoda.map"
  "LINKER:--no-undefined" "LINKER:--as-needed")
target_link_libraries(pagoda_shared PRIVATE ${pagoda_deps})
target_include_directories(pagoda_shared INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

add_library(pagoda_static STATIC ${pagoda_objs})
set_target_properties(pagoda_static PROPERTIES OUTPUT_NAME pagoda EXPORT_NAME pagoda_static LINKER_LANGUAGE C)
target_link_libraries(pagoda_static PRIVATE ${pagoda_deps}) # exported as $<LINK_ONLY:...>
target_include_directories(pagoda_static INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

install(TARGETS pagoda_shared pagoda_static EXPORT pagodaTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/include/pagoda.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# pkg-config: Libs.private is what `pkg-config --static` adds for libpagoda.a: the libraries the
# modules call, as the system's pkg-config names them (their shared libraries will do). They are
# not Requires.private: pkg-config --static would follow those into their own private
# dependencies (libmicrohttpd -> gnutls -> nettle, unistring, ...), whose static -dev packages a
# program that only wants libpagoda.a has no use for.
file(RELATIVE_PATH PC_REL_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
string(REGEX REPLACE "/$" "" PC_REL_PREFIX "${PC_REL_PREFIX}")
set(pc_flags)
foreach(dep JANSSON PCRE2 MHD YAML)
  foreach(d ${${dep}_LIBRARY_DIRS})
    if(NOT d IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
      list(APPEND pc_flags "-L${d}")
    endif()
  endforeach()
  foreach(l ${${dep}_LIBRARIES})
    list(APPEND pc_flags "-l${l}")
  endforeach()
endforeach()
if(PAGODA_WITH_CUDA)
  list(APPEND pc_flags "-L${CUDAToolkit_LIBRARY_DIR}" -lcudart -lcublas -lstdc++)
endif()
if(PAGODA_WITH_MPI)
  foreach(l ${MPI_C_LIBRARIES})
    get_filename_component(d ${l} DIRECTORY)
    get_filename_component(n ${l} NAME_WE)
    string(REGEX REPLACE "^lib" "" n ${n})
    if(d AND NOT d IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
      list(APPEND pc_flags "-L${d}")
    endif()
    list(APPEND pc_flags "-l${n}")
  endforeach()
endif()
foreach(l ${OpenMP_C_LIB_NAMES}) # gomp (GCC) or omp (clang), and pthread
  list(APPEND pc_flags "-l${l}")
endforeach()
list(APPEND pc_flags -lpthread -lm)
list(REMOVE_DUPLICATES pc_flags)
list(JOIN pc_flags " " PC_LIBS_PRIVATE)
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/pagoda.pc.in ${CMAKE_BINARY_DIR}/pagoda.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/pagoda.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# CMake package
include(CMakePackageConfigHelpers)
set(pagoda_cmakedir ${CMAKE_INSTALL_LIBDIR}/cmake/pagoda)
configure_package_config_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/pagodaConfig.cmake.in
  ${CMAKE_BINARY_DIR}/pagodaConfig.cmake INSTALL_DESTINATION ${pagoda_cmakedir})
# 0.x: a minor version may break the API, so only the same minor is compatible
write_basic_package_version_file(${CMAKE_BINARY_DIR}/pagodaConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(EXPORT pagodaTargets NAMESPACE pagoda:: DESTINATION ${pagoda_cmakedir})
install(FILES ${CMAKE_BINARY_DIR}/pagodaConfig.cmake ${CMAKE_BINARY_DIR}/pagodaConfigVersion.cmake
  DESTINATION ${pagoda_cmakedir})
